"""ResNet-18 on CIFAR-100: the shared code behind the scripts in ``scripts/``.

Training-side modules (``data``, ``pipeline``, ``model``, ``numerics``, ``resume``, ``engine``,
``checkpoint``, ``files``, ``config``) never import plotting libraries, so that editing a figure
can never force a retrain.
"""
