"""The ``visiontk`` command line (installed as the import package ``visiontk_cli``)."""
