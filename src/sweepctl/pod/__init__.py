"""Making a pod ready: bootstrap, SSH keys, its Python, data and tokenizer."""
