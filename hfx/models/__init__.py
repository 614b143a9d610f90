"""hfx.models"""
