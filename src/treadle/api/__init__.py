"""The REST API of the product documents, as Starlette routes (one module per resource)."""
