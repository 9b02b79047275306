"""Neural networks of the codec. Nothing here imports training code."""
