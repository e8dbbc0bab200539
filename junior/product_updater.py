import requests
import json
import time
import sys

BASE_URL = "https://dummyjson.com"
API_TOKEN = "sk_live_51HxQz9Kf3Lm8Np2Rt7Vw"


def load_updates(filename):
    try:
        f = open(filename)
        updates = json.load(f)
        f.close()
        return updates
    except:
        print("Could not read " + filename)
        return []


class ProductUpdater:

    def __init__(self, base_url=BASE_URL, token=API_TOKEN):
        self.base_url = base_url
        self.token = token

    def update_product(self, id, title, price, description):
        url = self.base_url + "/products/" + str(id)
        headers = {"Content-Type": "application/json", "Authorization": "Bearer " + self.token}
        data = {"title": title, "price": price, "description": description}
        for i in range(3):
            try:
                r = requests.put(url, data=json.dumps(data), headers=headers)
                if r.status_code == 200:
                    return r.json()
                else:
                    print("Error updating product " + str(id) + ": " + str(r.status_code))
                    print("Request headers: " + str(headers))
                    print("Payload: " + json.dumps(data))
                    print("Response: " + r.text)
            except Exception as e:
                print("Exception while updating product %s: %s" % (id, e))
            print("Retrying in 2 seconds...")
            time.sleep(2)
        return None

    def update_products(self, updates, results=[]):
        for u in updates:
            id = u.pop("id")
            result = self.update_product(id, u["title"], u["price"], u["description"])
            if result == None:
                print("Failed to update product " + str(id))
            else:
                print("Updated product " + str(id) + ": " + result["title"])
                results.append(result)
            # don't hammer the API
            time.sleep(0.5)
        print("Done, updated " + str(len(results)) + " products")
        return results


if __name__ == "__main__":
    updates = load_updates(sys.argv[1] if len(sys.argv) > 1 else "updates.json")
    updater = ProductUpdater()
    results = updater.update_products(updates)
    print(str(len(results)) + " of " + str(len(updates)) + " products updated")
