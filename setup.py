"""Declares the Cython fast path; everything else is in pyproject.toml."""

import shutil
import subprocess
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup


def _openssl_flags() -> dict:
    """Compile and link flags for libcrypto, with a clear error when its headers are missing."""
    if shutil.which("pkg-config"):
        probe = subprocess.run(["pkg-config", "--exists", "libcrypto"], check=False)
        if probe.returncode == 0:
            cflags = subprocess.run(
                ["pkg-config", "--cflags-only-I", "libcrypto"], capture_output=True, text=True
            ).stdout.split()
            libs = subprocess.run(
                ["pkg-config", "--libs", "libcrypto"], capture_output=True, text=True
            ).stdout.split()
            return {
                "include_dirs": [f[2:] for f in cflags if f.startswith("-I")],
                "library_dirs": [f[2:] for f in libs if f.startswith("-L")],
                "libraries": [f[2:] for f in libs if f.startswith("-l")] or ["crypto"],
            }
    for candidate in ("/usr/include/openssl/evp.h", "/usr/local/include/openssl/evp.h"):
        try:
            open(candidate).close()
            return {"libraries": ["crypto"]}
        except OSError:
            pass
    sys.stderr.write(
        "\nerror: OpenSSL headers not found. sfu's fast path (sfu/_fastpath.pyx) does SRTP with\n"
        "libcrypto. Install the system package first:\n"
        "    Debian/Ubuntu: apt-get install libssl-dev pkg-config\n"
        "    Fedora/RHEL:   dnf install openssl-devel pkgconf\n\n"
    )
    raise SystemExit(1)


setup(
    ext_modules=cythonize(
        [
            Extension(
                "sfu._fastpath",
                ["sfu/_fastpath.pyx"],
                extra_compile_args=["-O2", "-Wno-deprecated-declarations"],
                **_openssl_flags(),
            )
        ],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
