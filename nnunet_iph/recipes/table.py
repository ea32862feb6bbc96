"""The reference studies' pipelines as data: one :class:`Recipe` per study, no code branches.

A recipe names nnU-Net building blocks that exist elsewhere in the package: an intensity protocol
(:mod:`nnunet_iph.planning.intensity`), plane plans (:mod:`nnunet_iph.planning.planes`) or cascade
plans (:mod:`nnunet_iph.planning.cascade`), trainer names (``nnunet-iph trainers``) and whether the
study stripped the skull. Why each choice and how it differs from the paper: docs/recipes.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelGroup:
    """One ``[[train]]`` stage: every trainer x plans x configuration x fold of it.

    ``plans``: ``"planes"`` (one plans file per plane of the recipe), ``"default"`` (nnU-Net's
    ``nnUNetPlans``) or ``"cascade"``; ``ensemble_planes``: average the planes of each trainer (2.5D).
    """
    name: str
    trainers: tuple[str, ...]
    plans: str
    configurations: tuple[str, ...]
    after: tuple[str, ...] = ()
    ensemble_planes: bool = False


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    paper: str
    groups: tuple[ModelGroup, ...]
    intensity: str = "nnunet"
    planes: tuple[str, ...] = ()
    cascade: bool = False
    brain: bool = False  # the study stripped the skull before training
    differences: tuple[str, ...] = ()


_MIDL_TRAINERS = (("unet", "nnUNetTrainerVGG16UNet"), ("attention_unet", "nnUNetTrainerAttentionUNet"),
                  ("fpn", "nnUNetTrainerFPN"), ("transunet", "nnUNetTrainerTransUNet"))

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(
        "midl2026", "MIDL 2026 multi-site benchmark: per-plane 2D models and their 2.5D ensemble",
        "skull stripping (SynthStrip), HU clipped to [-30, 100] then min-max to [0, 1], 64x64x64 patches kept "
        "only where they contain hemorrhage, focal + Dice loss, Adam 5e-4 with plateau decay, U-Net (VGG16), "
        "Attention U-Net, FPN, TransUNet per plane, planes averaged into 2.5D",
        tuple(ModelGroup(name, (f"{trainer}Adam_fg100",), "planes", ("2d",), ensemble_planes=True)
              for name, trainer in _MIDL_TRAINERS),
        intensity="midl2026", planes=("axial", "coronal", "sagittal"), brain=True,
        differences=(
            "skull stripping: SynthStrip (a CNN) -> nnunet-iph's CT intracranial extraction (numpy/scipy, no "
            "weights); at conversion (--brain-mask) if the dataset was converted so, else predictions are "
            "restricted to the brain afterwards",
            "per-image min-max after clipping -> the fixed window [-30, 100] -> [0, 1] (identical whenever a scan "
            "reaches both bounds, which air and bone do in every head CT)",
            "64^3 selective patches -> nnU-Net's 2D patches of each plane with foreground oversampling 1.0 "
            "(_fg100: every patch centred on a hemorrhage voxel); lesion-free scans still give random patches",
            "nnU-Net's augmentation, patch size, batch size and deep supervision are kept",
        )),
    Recipe(
        "deepbleed", "DeepBleed (MISTIE II/III): V-Net in 2D and 3D on brain-extracted CT",
        "brain extraction (threshold [0, 100] HU, fill holes, FSL BET f=0.01), V-Net (Milletari 2016: 5x5x5 "
        "convolutions, residual stages, PReLU, strided-conv down-sampling) in 2D and 3D",
        (ModelGroup("vnet2d", ("nnUNetTrainerVNet",), "default", ("2d",)),
         ModelGroup("vnet3d", ("nnUNetTrainerVNet",), "default", ("3d_fullres",))),
        brain=True,
        differences=(
            "FSL BET f=0.01 after a [0, 100] HU threshold -> nnunet-iph's CT intracranial extraction (no FSL); at "
            "conversion (--brain-mask) if the dataset was converted so, else predictions restricted to the brain",
            "intensity: no protocol of ours is DeepBleed's [0, 100] HU range, which belongs to its skull "
            "stripping; nnU-Net's CT normalisation (0.5/99.5 foreground percentiles, z-score) is used",
            "loss and schedule: nnUNetTrainerVNet trains with focal + Dice and nnU-Net's SGD schedule "
            "(nnUNetTrainerVNetAdam: Adam 5e-4 + plateau decay, the MIDL schedule, not DeepBleed's)",
            "no registration to a template; nnU-Net's resampling, patch size and augmentation",
        )),
    Recipe(
        "physionet2d", "PhysioNet CT-ICH study: axial 2D U-Net, U-Net++, LinkNet, ResUNet",
        "axial 2D slices of the PhysioNet CT-ICH scans, U-Net, U-Net++, LinkNet and ResUNet compared",
        (ModelGroup("axial", ("nnUNetTrainerVGG16UNet", "nnUNetTrainerUNetPlusPlus", "nnUNetTrainerLinkNet",
                              "nnUNetTrainerResUNet"), "planes", ("2d",)),),
        planes=("axial",),
        differences=(
            "U-Net is nnunet-iph's VGG16 U-Net (the encoder of our U-Net++); nnU-Net's own U-Net is "
            "nnUNetTrainerFocalDice",
            "nnU-Net's CT normalisation, patch size, augmentation, focal + Dice loss and SGD schedule",
        )),
    Recipe(
        "coarse-fine", "INSTANCE coarse-to-fine: 2D DenseNet coarse stage -> 3D nnU-Net fine stage",
        "a 2D DenseNet segments coarsely, nnU-Net refines in 3D with the coarse mask as input",
        (ModelGroup("coarse", ("nnUNetTrainerDenseNetCoarse",), "cascade", ("2d_coarse",)),
         ModelGroup("fine", ("nnUNetTrainerCascadeFine",), "cascade", ("3d_fine",), after=("coarse",))),
        cascade=True,
        differences=(
            "nnU-Net's cascade machinery: the coarse mask enters as one-hot channel(s) after the CT; the fine "
            "stage needs every fold of the coarse stage (trained first)",
            "nnU-Net's CT normalisation, resampling and augmentation in both stages",
        )),
)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[name]
