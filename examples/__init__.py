"""Small programs that show how to use the runtime from an app."""
