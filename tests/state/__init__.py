"""Tests of the managed state store and its LangGraph/LangChain adapters."""
