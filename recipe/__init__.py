"""What a run is, derived from its validated config in one place (``RunRecipe``)."""
from recipe.run_recipe import InputTransform, RunRecipe

__all__ = ["InputTransform", "RunRecipe"]
