"""Measures of written text that the benchmarks report (degeneration.py)."""


def repeated_share(text: str, n: int = 10) -> float:
    """Share of chars that sit inside an n-char string already written earlier in the same text
    (the looping the seed warned about in long runs). 0.0 for text shorter than n."""
    if len(text) < n:
        return 0.0
    seen: set[str] = set()
    covered = [False] * len(text)
    for i in range(len(text) - n + 1):
        gram = text[i:i + n]
        if gram in seen:
            for j in range(i, i + n):
                covered[j] = True
        seen.add(gram)
    return sum(covered) / len(text)
