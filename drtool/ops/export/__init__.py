"""`drtool export-chunks`: Dify's indexed texts and annotation replies written to object storage as chunk files.

Modules, lowest first (each imports only those above it):
    writer.py       the options, one file's result, and the shared write: skip an unchanged file, upload
                    atomically (one PUT or multipart), delete the other-compression variants
    annotations.py  the annotation files of apps with annotation reply enabled: their key, lines and metadata
    chunks.py       `export_chunks`: each dataset's segments streamed from Postgres, then the annotation files
"""
