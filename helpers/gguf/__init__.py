"""GGUF, llama.cpp's file format, for Grok 2: export and verification (`export`), and file sizes per quantization
type computed from the tensor list and llama.cpp's own rules (`sizes`).

    path = helpers.gguf.export_gguf(model, "workspace/tiny-grok-2-f32.gguf", tokenizer=tokenizer)
    helpers.gguf.verify_gguf(path, model, tokenizer)["ok"]
    helpers.gguf.gguf_size(helpers.GROK2_RELEASED_CONFIG, "UD-Q2_K_XL").total_bytes
    helpers.gguf.GGUF_QUANTS                      # every type gguf_size knows, unsloth/grok-2-GGUF's included
    helpers.gguf.unsloth_file("IQ1_S").include    # where unsloth/grok-2-GGUF keeps a type, for `hf download`
"""

from .export import export_gguf, expected_gguf_tensors, gguf_tensor_layout, verify_gguf
from .sizes import (CLASSES, GGUF_QUANTS, UNSLOTH_DYNAMIC, UNSLOTH_FILES, UNSLOTH_GROK2_QUANTS, GgufSize, UnslothFile,
                    gguf_size, llama_cpp_types, tensor_bytes, unsloth_download_command, unsloth_file)

__all__ = ["export_gguf", "verify_gguf", "expected_gguf_tensors", "gguf_tensor_layout", "gguf_size", "GgufSize",
           "GGUF_QUANTS", "CLASSES", "UNSLOTH_DYNAMIC", "UNSLOTH_FILES", "UNSLOTH_GROK2_QUANTS", "UnslothFile",
           "llama_cpp_types", "tensor_bytes", "unsloth_download_command", "unsloth_file"]
