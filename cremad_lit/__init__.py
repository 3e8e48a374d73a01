"""cremad-lit: audio-visual emotion recognition on CREMA-D with PyTorch Lightning and Hydra.

Run `make demo` for a complete example on generated data; see README.md.
"""

__version__ = "0.4.0"

# The one emotion order used everywhere: label index i is EMOTIONS[i].
EMOTIONS: tuple[str, ...] = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
EMOTION_NAMES: dict[str, str] = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
INTENSITIES: tuple[str, ...] = ("LO", "MD", "HI", "XX")
STATEMENTS: dict[str, str] = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
