"""`python -m gpt2easy COMMAND [flags]`: the same as the installed `gpt2easy` command."""

from gpt2easy.cli import main

if __name__ == "__main__":
    main()
