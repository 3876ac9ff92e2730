from __future__ import annotations

from django.apps import AppConfig


class ConfigfileConfig(AppConfig):
    name = "configfile"
    verbose_name = "Config as code"
