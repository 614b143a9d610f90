"""hfx.runner"""
