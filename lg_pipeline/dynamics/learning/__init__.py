"""Learning dynamics (Ren & Sutherland, arXiv 2407.10490): what each update does to other answers, layer by layer."""
