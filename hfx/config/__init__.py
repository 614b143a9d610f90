"""hfx.config"""
