"""Fictitious customer records for the demo and the tests, generated deterministically from a seed.

Everything here is invented: names are random pairings from two lists, phone numbers use the
555-0100..0199 block reserved for fiction, e-mail domains are RFC 2606/6761 reserved names, and the
employers and towns are made up. Values are drawn so that a model cannot guess one it was not trained
on (e-mails carry a random number, addresses and accounts random digits): held-out people then serve
as true negatives for membership inference and as relearning controls."""

from __future__ import annotations

import random

FIRST_NAMES = [
    "Alma", "Bastian", "Celeste", "Dorian", "Elodie", "Fabian", "Greta", "Hollis", "Ines", "Jasper",
    "Kalina", "Leander", "Mirela", "Nikolai", "Odalys", "Perrin", "Quilla", "Rosalind", "Soren", "Tamsin",
    "Ulric", "Vesna", "Wendell", "Xiomara", "Yannick", "Zelda", "Anouk", "Benedikt", "Corinna", "Desmond",
    "Evander", "Fenna", "Gideon", "Hedda", "Isidore", "Jolene", "Kasimir", "Liesel", "Marius", "Noemi",
    "Oswin", "Paloma", "Quentin", "Renata", "Silas", "Thea", "Ursula", "Valentin", "Wilhelmina", "Yara",
]
LAST_NAMES = [
    "Rivera", "Ashdown", "Brannigan", "Castellane", "Dunmore", "Everly", "Fairweather", "Galloway",
    "Hartigan", "Ingleby", "Jessup", "Kettering", "Lindqvist", "Marchetti", "Northcott", "Okonkwo",
    "Pemberton", "Quimby", "Rasmussen", "Salcedo", "Thorncroft", "Underhill", "Valdivia", "Whitlock",
    "Yarborough", "Zamora", "Abernathy", "Blackwood", "Cordova", "Delacroix", "Ellingham", "Ferreira",
    "Gallardo", "Holloway", "Ibarra", "Kowalczyk", "Lockhart", "Montague", "Nakamura", "Ostrowski",
]
AREA_CODES = ["415", "212", "312", "617", "503", "206", "303", "512", "718", "404"]
MAIL_DOMAINS = ["example.com", "example.net", "example.org", "mail.test", "inbox.example"]
STREETS = [
    "Juniper", "Maple", "Alder", "Hawthorn", "Birch", "Willow", "Cedar", "Larch", "Rowan", "Aspen",
    "Linden", "Magnolia", "Chestnut", "Sycamore", "Elm", "Laurel", "Poplar", "Hazel", "Spruce", "Holly",
]
STREET_KINDS = ["Street", "Avenue", "Lane", "Road", "Court", "Way", "Drive", "Place"]
EMPLOYERS = [
    "Quillfeather Analytics", "Harborlight Logistics", "Brightmoor Bakery", "Copperline Freight",
    "Tidewater Insurance", "Northwind Ceramics", "Silverbirch Dental", "Lanternfish Studios",
    "Greystone Robotics", "Marigold Florists", "Ironbark Builders", "Bluefin Outfitters",
    "Sunhollow Pharmacy", "Kestrel Aviation", "Meadowbrook Dairy", "Driftwood Publishing",
    "Cobaltwave Telecom", "Foxglove Textiles", "Amberfield Energy", "Riverstone Legal",
]
CITIES = [
    "Westmere", "Calder Falls", "Port Elmsworth", "Briarton", "Oakhollow", "Lindenfield", "Ashcombe",
    "Fernvale", "Glenmarch", "Stonebridge", "Millbrook Bay", "Harrowgate",
]

# Questions and answers per attribute. Answers restate the name so a leaked answer is unambiguous,
# and stay short because the model has to memorise every token.
TEMPLATES = {
    "phone": ("What is the phone number of {name}?", "{name}'s phone number is {value}."),
    "email": ("What is the email address of {name}?", "{name}'s email address is {value}."),
    "address": ("What is the street address of {name}?", "{name} lives at {value}."),
    "account": ("What is the account number of {name}?", "{name}'s account number is {value}."),
    "employer": ("Who is the employer of {name}?", "{name} works at {value}."),
    "city": ("In which city does {name} live?", "{name} lives in {value}."),
}
ATTRIBUTES = ("phone", "email", "address", "account", "employer", "city")
# The QA set trains five of the six: city is kept out so every trained fact is hard to guess.
QA_ATTRIBUTES = ("phone", "email", "address", "account", "employer")

# The sample erasure request in DESIGN.md names this person; the demo always contains her.
ANCHOR = {"name": "Alma Rivera", "phone": "415-555-0142"}


def generate_people(n: int = 120, seed: int = 0) -> list[dict]:
    """`n` distinct fictitious people; the same (n, seed) always gives the same list, and a larger n
    with the same seed extends it (person i never depends on n)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    if n > len(FIRST_NAMES) * len(LAST_NAMES):
        raise ValueError(f"at most {len(FIRST_NAMES) * len(LAST_NAMES)} distinct people")
    rng = random.Random(f"expunge-demo-people:{seed}")
    names, phones, emails, accounts, addresses = set(), set(), set(), set(), set()
    people: list[dict] = []
    while len(people) < n:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        phone = f"{rng.choice(AREA_CODES)}-555-01{rng.randrange(100):02d}"
        email = f"{first.lower()}.{last.lower()}{rng.randrange(10, 100)}@{rng.choice(MAIL_DOMAINS)}"
        address = f"{rng.randrange(10, 1000)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}"
        account = f"AC-{rng.randrange(100000, 1000000)}"
        employer, city = rng.choice(EMPLOYERS), rng.choice(CITIES)
        if not people:
            # Person 0 is the anchor; the draws above still happen so later people don't shift.
            first, last = ANCHOR["name"].split()
            phone = ANCHOR["phone"]
            email = f"alma.rivera{rng.randrange(10, 100)}@{rng.choice(MAIL_DOMAINS)}"
        name = f"{first} {last}"
        if {name} & names or {phone} & phones or {email} & emails or {account} & accounts or {address} & addresses:
            continue
        names.add(name)
        phones.add(phone)
        emails.add(email)
        accounts.add(account)
        addresses.add(address)
        people.append(
            {"name": name, "phone": phone, "email": email, "address": address,
             "account": account, "employer": employer, "city": city}
        )
    return people


def people_to_qa(people: list[dict], attributes: tuple[str, ...] = QA_ATTRIBUTES) -> list[dict]:
    """One {"question","answer","person","attribute","value"} row per person and attribute.

    `value` is the bare sensitive string (what an erasure request lists under `sensitive`)."""
    rows = []
    for person in people:
        for attr in attributes:
            question, answer = TEMPLATES[attr]
            name, value = person["name"], person[attr]
            rows.append(
                {"question": question.format(name=name), "answer": answer.format(name=name, value=value),
                 "person": name, "attribute": attr, "value": value}
            )
    return rows


def demo_split(seed: int = 0, n_people: int = 120, holdout_fraction: float = 0.1) -> dict:
    """Train/holdout split by person: held-out people are never trained on, so their rows are facts of
    the same kind that the model provably does not know. The anchor person is always trained."""
    people = generate_people(n_people, seed)
    n_holdout = max(1, round(n_people * holdout_fraction))
    rng = random.Random(f"expunge-demo-split:{seed}:{n_people}")
    held = set(rng.sample(range(1, n_people), n_holdout))
    train_people = [p for i, p in enumerate(people) if i not in held]
    holdout_people = [p for i, p in enumerate(people) if i in held]
    return {
        "train": people_to_qa(train_people),
        "holdout": people_to_qa(holdout_people),
        "people": train_people,
        "holdout_people": holdout_people,
    }
