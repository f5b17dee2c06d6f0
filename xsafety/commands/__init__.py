"""Thin typer command modules: parse arguments, call library functions, print results."""
