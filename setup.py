"""ttc_jax: scaling LLM test-time compute optimally, in JAX."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.12",            # 0.10.x on Python 3.11 (CPU), 0.11 on the CUDA machines
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "chex>=0.1.92,<0.2",
    "tensorflow-datasets>=4.9.10,<5",  # array_record builders; TensorFlow itself is not needed
    "array_record>=0.8.6,<0.9",
    "grain>=0.2.18,<0.3",
    "numpy>=2.0,<3",
    "ml_collections>=1.1,<2",
    "matplotlib>=3.9,<4",
    "tqdm>=4.66,<5",
]

EXTRAS = {
    "test": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "hypothesis>=6.100,<7",
             "sympy>=1.12,<2", "nbclient>=0.10,<1", "nbformat>=5.10,<6", "ipykernel>=6.29,<8",
             # tests/project/test_architecture.py (.importlinter); the formatter (pyproject.toml)
             "import-linter>=2.1,<3", "pyink>=24,<27",
             # TPU ahead-of-time compiles on CPU (tests/models/test_attention_backends.py): the
             # libtpu jax[tpu]==0.10.2 pins; Linux-only wheels, the test skips without it
             "libtpu==0.0.42.1; platform_system == 'Linux'"],
    # Hugging Face interop (checkpoint import, tokenizers, the sampler benchmark's baseline)
    "hf": ["torch>=2.4,<2.14", "transformers>=5.0,<6", "safetensors>=0.4,<1",
           "tokenizers>=0.20,<1"],
    "notebooks": ["nbclient>=0.10,<1", "nbformat>=5.10,<6", "ipykernel>=6.29,<8"],
    # symbolic equivalence of MATH answers (ttc_jax/grading.py imports it lazily)
    "math": ["sympy>=1.12,<2"],
}

setup(
    name="ttc_jax",
    version="0.1.0",
    description="JAX-native research code for scaling LLM test-time compute optimally",
    packages=find_packages(include=["ttc_jax", "ttc_jax.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
