"""hfx.cli"""
