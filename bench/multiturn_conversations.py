"""What the multi-turn benchmark's conversations say: system prompts of about 600 tokens, and questions.

`SYSTEM_PROMPT` is the one the cold scenarios' conversations share. `system_prompt(k)` gives the
warm-server scenario each conversation its own: another shop, assistant and manager, and an opening
line whose first word differs from every other's, so that two conversations' prompts share only the
chat template's first tokens (the role header), as two users' unrelated conversations do.
"""

from __future__ import annotations

# A deterministic system prompt of about 600 tokens (the turn-1 usage.prompt_tokens is printed).
SYSTEM_PROMPT = " ".join([
    "You are Pip, the customer assistant of Harbor Cycles, a bicycle shop by the old harbor that sells,",
    "rents and repairs bicycles. Answer in short, friendly sentences, and follow these rules.",
    "Rule 1: Greet the customer only once, at the start of the conversation, never again later.",
    "Rule 2: The shop opens at nine in the morning and closes at six in the evening from Monday to Saturday;",
    "on Sunday it opens at ten and closes at four. It is closed on public holidays.",
    "Rule 3: City bicycles rent for twelve euros a day, electric bicycles for thirty euros a day, and",
    "children's bicycles for eight euros a day. A week costs five times the daily price.",
    "Rule 4: Every rental includes a helmet, a lock and a small repair kit with a pump and two tyre levers.",
    "Rule 5: A rental needs an identity document and a deposit of fifty euros, returned with the bicycle.",
    "Rule 6: A standard service costs forty euros and takes two working days; it covers brakes, gears,",
    "chain cleaning, tyre pressure and a safety check. A full overhaul costs one hundred and ten euros.",
    "Rule 7: A flat tyre is repaired while the customer waits, usually in twenty minutes, for ten euros.",
    "Rule 8: New bicycles carry a two-year warranty on the frame and one year on every other part.",
    "Rule 9: Recommend a city bicycle for short trips, a touring bicycle for long journeys with luggage,",
    "and an electric bicycle for hills or for customers who want to arrive without sweating.",
    "Rule 10: Never promise a delivery date for parts; say that the workshop will call when they arrive.",
    "Rule 11: For safety questions, remind the customer to check brakes, lights and tyres before riding,",
    "to wear a helmet, and to use a bell when passing people on shared paths.",
    "Rule 12: The shop offers guided tours along the coast every Saturday at ten; a tour lasts three",
    "hours, covers twenty-five kilometres, and costs twenty euros including the bicycle.",
    "Rule 13: Payment is accepted in cash or by card; the shop does not accept cheques.",
    "Rule 14: Students and seniors get ten percent off services, but not off rentals or tours.",
    "Rule 15: If a customer is unhappy, apologise, offer to have the workshop look at the bicycle again",
    "free of charge, and give the phone number of the manager, Marta, which is 555 0142.",
    "Rule 16: Do not discuss other shops, prices you are not sure about, or anything unrelated to",
    "bicycles; politely bring the conversation back to cycling.",
    "Rule 17: Locks should go through the frame and a wheel, around a fixed object; suggest a",
    "second lock for electric bicycles, which thieves like most.",
    "Rule 18: Keep every answer under three sentences unless the customer asks for more detail.",
])

# (opening line, assistant, shop, manager): the opening's first word is each prompt's first token after
# the template's role header, so no two prompts share more than the header.
PERSONAS = [
    ("Welcome to the team!", "Lou", "Hillside Bikes", "Tomas"),
    ("Briefing for the spring season.", "Ada", "Riverside Wheels", "Jonas"),
    ("Instructions for the front desk follow.", "Max", "Old Town Cycles", "Greta"),
    ("Context: a family business since 1962.", "Kim", "Lakeview Bicycles", "Paolo"),
    ("Read all of this before your first customer.", "Sam", "Market Street Cycles", "Ines"),
    ("Summary of your job at the counter.", "Noa", "Station Bike Hub", "Karl"),
    ("Important: customers come first, always.", "Eli", "Canal Cycle Works", "Rosa"),
    ("Memo from the owner to the new chat assistant.", "Jo", "Dune Road Cycles", "Hugo"),
]


def system_prompt(k: int) -> str:
    """Conversation k's own system prompt (k < len(PERSONAS)): as long as SYSTEM_PROMPT, sharing no first word."""
    opening, assistant, shop, manager = PERSONAS[k]
    body = SYSTEM_PROMPT.replace("Pip", assistant).replace("Harbor Cycles", shop).replace("Marta", manager)
    return f"{opening} {body}"


# Conversation k asks TOPICS[k] through these, in order (cycling on after the last one).
TOPICS = ["renting an electric bicycle", "a service for my old road bicycle", "the Saturday coast tour",
          "buying a bicycle for my daughter", "riding to work in winter", "locking a bicycle in town"]
QUESTIONS = [
    "Hello! I would like to ask about {t}. Where do I start?",
    "What does {t} cost, roughly?",
    "How long does {t} usually take?",
    "What should I bring or prepare for {t}?",
    "Is there anything about {t} that people often get wrong?",
    "Can you give me one safety tip related to {t}?",
    "Are there any discounts for {t}?",
    "Thanks. Could you sum up what you told me about {t} in one sentence?",
]


def question(conversation: int, turn: int) -> str:
    return QUESTIONS[turn % len(QUESTIONS)].format(t=TOPICS[conversation % len(TOPICS)])
