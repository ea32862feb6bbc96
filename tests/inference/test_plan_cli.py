"""``nnunet-iph plan`` refuses datasets whose images are stored in mixed orientations."""

from geom_synth import run_cli, write_raw_dataset


def test_mixed_orientations_refused_with_the_files_named(nnunet_dirs):
    write_raw_dataset(nnunet_dirs["nnUNet_raw"], 562, "MixedDirections", n_train=3, n_test=0, odd_direction_case=1)
    proc = run_cli("nnunet-iph", "plan", "-d", "562", "--planes", "--no-preprocess", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "mixed orientations" in proc.stderr and "case01_0000.nii.gz" in proc.stderr
    assert not (nnunet_dirs["nnUNet_preprocessed"] / "Dataset562_MixedDirections" / "nnUNetPlans_axial.json").exists()
