"""Production mode, as documented: check --deploy passes with no warnings."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="jobs.example.com",
        **extra,
    )
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_without_warnings():
    done = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


def test_production_mode_refuses_to_start_without_a_secret_key():
    env = production_env()
    del env["SECRET_KEY"]
    done = manage("check", env=env)
    assert done.returncode != 0
    assert "SECRET_KEY" in done.stderr


def test_production_settings_values():
    done = manage(
        "shell",
        "--verbosity",
        "0",
        "-c",
        "from django.conf import settings as s; "
        "print(s.DEBUG, s.LOG_FORMAT, s.DATA_UPLOAD_MAX_MEMORY_SIZE, "
        "s.DATABASES['default']['CONN_HEALTH_CHECKS'], s.DATABASES['default']['CONN_MAX_AGE'], "
        "s.METRICS_ALLOWED_NETWORKS, s.STORAGES['staticfiles']['BACKEND'])",
        env=production_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "False",
        "json",
        "524288",
        "True",
        "60",
        "['127.0.0.0/8',",
        "'::1/128']",
        "whitenoise.storage.CompressedManifestStaticFilesStorage",
    ]
