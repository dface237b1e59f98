"""Prompt templates: the default class / attribute-sentence prompt (a plain setting, no model code)."""

from __future__ import annotations

DEFAULT_TEMPLATE = "This is a video about {}"  # `{}` is the class name or the joined attributes
