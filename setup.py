"""Build the native HMAC kernel and ship the example policy set inside the package."""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildWithExamples(build_py):
    """Copy the repo's ``policies/`` into the wheel as ``govern/_demo_policies``."""

    def run(self) -> None:
        super().run()
        src = Path(__file__).parent / "policies"
        dst = Path(self.build_lib) / "govern" / "_demo_policies"
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)


setup(
    cmdclass={"build_py": BuildWithExamples},
    ext_modules=[
        Extension(
            "govern.mask._hmac",
            sources=["govern/mask/_hmac.c"],
            libraries=["crypto", "pthread"],
            extra_compile_args=["-O3", "-Wno-deprecated-declarations"],
        )
    ],
)
