"""hfx's built-in plugins, installed as the package ``hfx_plugins`` (never as a top-level ``plugins``).

Each sub-folder whose ``__init__.py`` builds a ``Plugin`` is one plugin, in the standard anatomy
(:data:`hfx.registry.ANATOMY`), registered through the ``hfx.plugins`` entry-point group in pyproject.toml
exactly as a third-party plugin would be. A sub-folder without one (``prompt_learning``) is a library that
several plugins share: no entry point, and it imports no plugin (``tests/test_anatomy.py``).
"""
