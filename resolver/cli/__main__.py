"""``python -m resolver.cli``: the ``idnode`` command."""

from resolver.cli import main

main()
