"""Named sets of hand-written CLIP prompt templates, as the official code of the CLIP methods uses them.

A config's ``templates`` is a list of templates (each with one ``{}`` where the class name goes) or the name of a
set registered in :data:`TEMPLATE_SETS`::

    prompt: {method: clip_zeroshot, templates: coop:oxford_pets}

Registered sets (facts read from the official repositories):

- ``coop:<dataset>``: the one template per dataset of CoOp's zero-shot CLIP (``CUSTOM_TEMPLATES`` in
  ``KaiyangZhou/CoOp trainers/zsclip.py``), the zero-shot baseline of the CoOp, CoCoOp, MaPLe and PromptSRC tables.
  Datasets by the names of CoOp's dataset configs (``configs/datasets/*.yaml``): caltech101, dtd, eurosat,
  fgvc_aircraft, food101, imagenet, imagenet_a, imagenet_r, imagenet_sketch, imagenetv2, oxford_flowers,
  oxford_pets, stanford_cars, sun397, ucf101.
- ``kgcoop:<dataset>``: KgCoOp's hand-crafted prompts (``CUSTOM_TEMPLATES`` in ``htyao89/KgCoOp
  KgCoOp/trainers/kgcoop.py``): CoOp's, except DTD, ``"a photo of a {}, a type of texture."``.
- ``clip:imagenet80``: the 80 ImageNet templates of CLIP's prompt-engineering notebook (open_clip's
  ``OPENAI_IMAGENET_TEMPLATES``; CoOp's ``IMAGENET_TEMPLATES``, the same list in the same order).
- ``clip:imagenet_select``: the 7 of them CoOp's prompt-ensembling zero-shot CLIP uses (``IMAGENET_TEMPLATES_SELECT``
  in ``trainers/imagenet_templates.py``).
- ``promptsrc:imagenet60``: PromptSRC's textual diversity (``IMAGENET_TEMPLATES`` in ``muzairkhattak/PromptSRC
  trainers/imagenet_templates.py``): 60 templates, the first 60 of the 80 ("a photo of a {}." moved to the front;
  the order does not matter to an average).

Another package adds a set with ``TEMPLATE_SETS.add(name, TemplateSet(load, source))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from promptcore.errors import UserError
from promptcore.plugins import lookup
from promptcore.registry import Registry, UnknownNameError


@dataclass(frozen=True)
class TemplateSet:
    """A named template set.

    Attributes:
        load: returns the templates (called on use, so a set read from a library costs nothing until then).
        source: where the templates come from.
    """

    load: Callable[[], Sequence[str]]
    source: str


TEMPLATE_SETS: Registry[TemplateSet] = Registry("template set")

COOP_TEMPLATES: dict[str, str] = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "stanford_cars": "a photo of a {}.",
    "food101": "a photo of {}, a type of food.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
    "imagenet_sketch": "a photo of a {}.",
    "imagenetv2": "a photo of a {}.",
    "imagenet_a": "a photo of a {}.",
    "imagenet_r": "a photo of a {}.",
}
KGCOOP_TEMPLATES: dict[str, str] = {**COOP_TEMPLATES, "dtd": "a photo of a {}, a type of texture."}
IMAGENET_SELECT: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def _imagenet80() -> tuple[str, ...]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


for _dataset, _template in COOP_TEMPLATES.items():
    TEMPLATE_SETS.add(f"coop:{_dataset}", TemplateSet(lambda t=_template: (t,), "KaiyangZhou/CoOp trainers/zsclip.py CUSTOM_TEMPLATES"))
for _dataset, _template in KGCOOP_TEMPLATES.items():
    TEMPLATE_SETS.add(f"kgcoop:{_dataset}", TemplateSet(lambda t=_template: (t,), "htyao89/KgCoOp KgCoOp/trainers/kgcoop.py CUSTOM_TEMPLATES"))
TEMPLATE_SETS.add("clip:imagenet80", TemplateSet(_imagenet80, "open_clip OPENAI_IMAGENET_TEMPLATES (CLIP's notebook; CoOp's IMAGENET_TEMPLATES)"))
TEMPLATE_SETS.add("clip:imagenet_select", TemplateSet(lambda: IMAGENET_SELECT, "KaiyangZhou/CoOp trainers/imagenet_templates.py IMAGENET_TEMPLATES_SELECT"))
TEMPLATE_SETS.add("promptsrc:imagenet60", TemplateSet(lambda: _imagenet80()[:60], "muzairkhattak/PromptSRC trainers/imagenet_templates.py IMAGENET_TEMPLATES"))


def check_templates(spec: str | Sequence[str], field: str = "templates") -> None:
    """Raises ValueError for an unknown set name (naming the close ones), an empty list, or a template without
    ``{}``."""
    if isinstance(spec, str):
        try:
            lookup(TEMPLATE_SETS, spec)
        except UnknownNameError as e:
            raise UserError(f"{field}: {e}") from None
        return
    if not spec:
        raise UserError(f"{field}: expected at least one template, e.g. ['a photo of a {{}}.'], or a template set such as coop:imagenet")
    bad = [t for t in spec if "{}" not in t]
    if bad:
        raise UserError(f"{field}: {bad} have no '{{}}' where the class name goes, e.g. 'a photo of a {{}}.'")


def templates_of(spec: str | Sequence[str]) -> list[str]:
    """The templates a config's ``templates`` gives: the list itself, or the registered set it names."""
    if isinstance(spec, str):
        return list(lookup(TEMPLATE_SETS, spec).load())
    return list(spec)


__all__ = ["COOP_TEMPLATES", "KGCOOP_TEMPLATES", "TEMPLATE_SETS", "TemplateSet", "check_templates", "templates_of"]
