"""The publish queue: session events single-tracked through each assistant's publish thread."""
