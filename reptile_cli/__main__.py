"""``python -m reptile_cli ...`` runs the same CLI as the ``reptile`` console script."""

from reptile_cli.cli import main

if __name__ == "__main__":
    main()
