"""Training: recipes, datasets and samplers, the Lightning module, feature mode, the run driver."""
from dermlearn.training.recipes import RECIPES, Recipe, RecipeError, get_recipe, load_recipe

__all__ = ["RECIPES", "Recipe", "RecipeError", "get_recipe", "load_recipe", "train"]


def train(*args, **kwargs):
    """See :func:`dermlearn.training.run.train` (imported lazily: it pulls in Lightning)."""
    from dermlearn.training.run import train as _train

    return _train(*args, **kwargs)
