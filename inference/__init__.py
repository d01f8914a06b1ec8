"""Using a trained model: embed image folders, search neighbours, draw what it retrieves.

Above ``dataset``, ``net`` and ``evaluation`` (it builds the run's backbone),
below the command lines ``embed.py`` and ``retrieve.py`` and the trainer,
which draws the pictures after evaluation.
"""
