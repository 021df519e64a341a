"""rmoe_mm: Residual Mixture of Experts backbones for mmsegmentation and mmdetection."""
from pathlib import Path
from setuptools import find_packages, setup


def read_requirements(path):
    """Requirement lines of ``path``, following ``-r`` includes."""
    lines = []
    for line in Path(path).read_text().splitlines():
        line = line.split('#')[0].strip()
        if line.startswith('-r'):
            lines += read_requirements(Path(path).parent / line[2:].strip())
        elif line:
            lines.append(line)
    return lines


def read_version():
    """``__version__`` of rmoe_mm/version.py, without importing the package."""
    namespace = {}
    exec(Path('rmoe_mm/version.py').read_text(), namespace)
    return namespace['__version__']


setup(
    name='rmoe_mm',
    version=read_version(),
    description='Residual Mixture of Experts (RMoE) backbones for OpenMMLab',
    long_description=Path('README.md').read_text() if Path('README.md').exists() else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['rmoe_mm', 'rmoe_mm.*']),
    python_requires='>=3.9',
    # torch and mmcv (with ops) are installed by tools/setup_env.sh before this
    # package; listing them here would let pip try to build mmcv in isolation.
    install_requires=[r for r in read_requirements('requirements/runtime.txt')
                      if not r.startswith('mmcv')],
    extras_require={'tests': read_requirements('requirements/tests.txt')},
)
