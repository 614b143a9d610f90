"""hfx.data"""
