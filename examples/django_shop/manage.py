#!/usr/bin/env python
"""The Django shop's manage.py: ``migrate``, ``runtaskmill`` (the executor and the
scheduler, as ``taskmill run``), ``place_order`` (an order and its receipt job)."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
