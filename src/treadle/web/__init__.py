"""Server-rendered pages for people: the hosted approval page."""
