"""The emotion labels, in the FER2013 class order that every shipped model uses."""

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
