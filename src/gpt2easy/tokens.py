"""GPT-2's one special token, as text and as id: defined once, importable without NumPy or TF."""

ENDOFTEXT = "<|endoftext|>"  # separates documents in a corpus; the text the encoder turns into...
ENDOFTEXT_ID = 50256  # ...this id, the last of GPT-2's vocabulary: where unconditional samples start
