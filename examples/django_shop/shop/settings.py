"""Settings of the Django shop: one SQLite file holds Django's tables and taskmill's.

``TASKMILL_DATABASE_URL`` is where taskmill keeps its jobs (here the same file; on
PostgreSQL, the same database as ``DATABASES["default"]`` or another one).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_FILE = os.environ.get("SHOP_DATABASE", str(BASE_DIR / "shop.db"))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "development only, not a secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]  # testserver: Django's test client
INSTALLED_APPS = ["shop"]
ROOT_URLCONF = "shop.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATABASE_FILE,
        # As taskmill's own connections: writers wait for SQLite's one lock (up to
        # 30 s) instead of failing, and take it when their transaction begins.
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}

TASKMILL_DATABASE_URL = os.environ.get("TASKMILL_DATABASE_URL", f"sqlite:///{DATABASE_FILE}")
