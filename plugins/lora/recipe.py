"""placeholder"""
from hfx.registry import Recipe
class LoraRecipe(Recipe):
    pass
