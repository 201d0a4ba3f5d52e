"""Governed LangChain tools and agents for AEGIS."""
