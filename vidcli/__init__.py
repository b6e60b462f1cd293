import logging

__version__ = "0.1.0"

# Importing peft imports bitsandbytes, which on a CPU with AVX512-BF16 tries to fetch a 4-bit matmul
# kernel from the Hugging Face Hub (through the `kernels` package) and logs a warning of two lines when
# it cannot (offline, or an unverified publisher). vidcli never runs bitsandbytes on a CPU (QLoRA and
# the 8-bit optimiser need CUDA), so those warnings would only bury the output of every command, the
# toy world's and the helpers' processes included: they are kept at ERROR for all of vidcli.
for _name in ("bitsandbytes.backends.cpu.ops", "kernels"):
    logging.getLogger(_name).setLevel(logging.ERROR)
del _name
