"""The catalog: schema, loaders (synthetic electronics, Amazon Beauty), embeddings and storage."""
