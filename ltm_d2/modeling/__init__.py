from .bags import anchor_bags, sample_bags
from .ltm import LTM
from .matching import mean_max, negative_mean_max
