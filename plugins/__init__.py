"""hfx's built-in plugins, installed as the package ``hfx_plugins`` (never as a top-level ``plugins``).

Each sub-folder is one plugin registered through the ``hfx.plugins`` entry-point group in pyproject.toml,
exactly as a third-party plugin would be.
"""
