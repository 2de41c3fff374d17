"""Records, readers and writers per format, and safe image loading.

- `bpo.data.records`: the `Sample`, `Negative` and `Pair` records.
- `bpo.data.jsonl`: streaming JSONL reading and resumable writing.
- `bpo.data.formats`: readers for LLaVA, ShareGPT4V, the BPO release and JSONL.
- `bpo.data.images`: image paths confined to the image root; any image as RGB.

Import the submodules directly; this package imports nothing, so that reading a
record does not pull in numpy, ijson or PIL.
"""
