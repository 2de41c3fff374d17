"""The pairs every export test writes: two images, a multi-turn prompt, a text-only pair."""

from bpo.data.records import Pair

SIZES = {"astronaut.jpg": (64, 48), "camera.png": (40, 30)}


def make_pairs():
    question = [{"role": "user", "content": "What is in the image?"}]
    multi_turn = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is this?"},
        {"role": "assistant", "content": "A photo."},
        {"role": "user", "content": "Who holds the camera?"},
    ]
    gold = "An astronaut holds a helmet beside a flag."
    return [
        Pair(
            "s1/image-weakening/0",
            "astronaut.jpg",
            question,
            gold,
            "A man rides a horse.",
            "image-weakening",
        ),
        Pair(
            "s2/llm-injection/0",
            "camera.png",
            multi_turn,
            "A man.",
            "A woman with a dog.",
            "llm-injection",
        ),
        Pair(
            "s1/cooccurrence/0",
            "astronaut.jpg",
            question,
            gold,
            "An astronaut holds a cup.",
            "cooccurrence",
        ),
        Pair(
            "s1/llm-injection/0",
            "astronaut.jpg",
            question,
            gold,
            "Two astronauts and a rocket.",
            "llm-injection",
        ),
        Pair(
            "t1/llm-injection/0",
            None,
            [{"role": "user", "content": "Say hi."}],
            "Hi.",
            "Bye.",
            "llm-injection",
        ),
    ]
