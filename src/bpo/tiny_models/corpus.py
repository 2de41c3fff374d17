"""The small English corpus the tiny models' tokenizers are trained on, offline.

COCO's object names with colours, numbers and places, in the questions and
answers of POPE, CHAIR and instruction data: enough for a tokenizer whose
tokens look like words on the text the tests and the toy world use.
"""

from __future__ import annotations

from collections.abc import Iterator

# The 80 object categories of COCO (Lin et al. 2014), the vocabulary of POPE and CHAIR.
COCO_OBJECTS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
_COLOURS = ("red", "green", "blue", "yellow", "black", "white", "brown", "gray", "orange",
            "pink", "purple")  # fmt: skip
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10")  # fmt: skip
_PLACES = ("on the left", "on the right", "in the middle", "at the top", "at the bottom",
           "next to the table", "in front of the wall", "behind the chair", "near the window")  # fmt: skip
_QUESTIONS = (
    "Is there a {o} in the image?",
    "Is there a {o} in the picture? Answer yes or no.",
    "How many {o}s are in the image?",
    "What color is the {o}?",
    "Where is the {o}?",
    "What is the man holding?",
    "Which object is next to the {o}?",
    "Why is the {o} here?",
    "Who is sitting near the {o}?",
    "Describe the image in detail.",
    "What do you see in this photo?",
)
_ANSWERS = (
    "Yes, there is a {c} {o} {p}.",
    "No, there is no {o} in the image.",
    "There are {n} {o}s {p}.",
    "The {o} is {c}.",
    "The image shows a {c} {o} {p}, and a person is standing beside it.",
    "I see {n} {o}s and a {c} cup; the scene looks like a kitchen.",
)


def tokenizer_corpus() -> Iterator[str]:
    """A small English corpus: COCO objects, colours, numbers, places, questions and answers.

    Deterministic, so the same seed always gives the same tokenizer.
    """
    for index, obj in enumerate(COCO_OBJECTS):
        colour = _COLOURS[index % len(_COLOURS)]
        number = _NUMBERS[index % len(_NUMBERS)]
        place = _PLACES[index % len(_PLACES)]
        for template in (*_QUESTIONS, *_ANSWERS):
            yield template.format(o=obj, c=colour, n=number, p=place)
    yield " ".join((*_COLOURS, *_NUMBERS, "yes", "no", "Yes", "No", "USER", "ASSISTANT"))
