"""Property tests (hypothesis): the parsers and the tracker against arbitrary input."""
