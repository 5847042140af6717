"""(being written)"""

MODELS: list = []
RECIPES: dict = {}
