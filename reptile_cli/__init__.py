"""reptile: few-shot meta-learning with Reptile (Nichol, Achiam & Schulman 2018, arXiv:1803.02999).

Data flow: ``cli`` -> ``config`` (Hydra) -> ``data`` (download, prepare, episodes) -> ``models`` ->
``trainer`` (``reptile`` maths per meta-iteration) -> ``checkpoint`` -> ``evaluate``.
"""

__version__ = "0.1.0"
