"""Long-form writing beside the story: memory, author's note, lorebook, and the context an RNN reads.
A library: imports only core modules and below."""
from aiwriter.story.context import AssemblySettings, Context, assemble
from aiwriter.story.files import load_file, loads, save_file, to_lite, to_novelai
from aiwriter.story.lorebook import Entry, Lorebook, from_dict, to_dict

__all__ = ["AssemblySettings", "Context", "assemble", "Entry", "Lorebook", "from_dict", "to_dict",
           "load_file", "loads", "save_file", "to_lite", "to_novelai"]
